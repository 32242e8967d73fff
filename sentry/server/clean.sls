{#- The server's data is the operator's: clean removes only the logs' directory and the instance's settings. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-server-logdir-absent:
  file.absent:
    - name: {{ sentry.server.logdir }}

sentry-server-settings-absent:
  file.absent:
    - name: /etc/sentry/instances/{{ sentry.server.program }}.json

{#- The folders were made for the settings: leave no empty one behind (the theme's clean runs later). #}
sentry-server-settings-dir-absent:
  cmd.run:
    - name: rmdir /etc/sentry/instances
    - onlyif:
      - test -d /etc/sentry/instances && test -z "$(ls -A /etc/sentry/instances)"
    - require:
      - file: sentry-server-settings-absent
