{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-theme-files-absent:
  file.absent:
    - name: {{ sentry.theme.dir }}
