{#- The server's data is the operator's: clean removes only the logs' directory. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-server-logdir-absent:
  file.absent:
    - name: {{ sentry.server.logdir }}
