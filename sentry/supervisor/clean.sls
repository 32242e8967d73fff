{#- Stop and forget the program; supervisor itself stays (other programs may use it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-supervisor-program-absent:
  sentry_program.absent:
    - name: {{ sentry.server.program }}
    - conf_file: {{ sentry.supervisor.confdir }}/{{ sentry.server.program }}.conf
    - socket_path: {{ sentry.supervisor.socket }}
