{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set parent = salt["file.dirname"](sentry.theme.dir) %}

sentry-theme-files-absent:
  file.absent:
    - name: {{ sentry.theme.dir }}

{#- The theme's folder (/etc/sentry) was made for it: leave no empty one behind. #}
{%- if parent not in ("/", "/etc", "/usr", "/usr/share", "/usr/local", "/var", "/var/lib", "/opt", "/srv") %}
sentry-theme-parent-absent:
  cmd.run:
    - name: rmdir {{ parent }}
    - onlyif:
      - test -d {{ parent }} && test -z "$(ls -A {{ parent }})"
    - require:
      - file: sentry-theme-files-absent
{%- endif %}
