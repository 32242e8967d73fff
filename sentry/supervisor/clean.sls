{#- Stop and forget the program; supervisor itself stays (other programs may use it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set program = sentry.server.program %}

sentry-supervisor-program-dead:
  sentry_program.dead:
    - name: {{ program }}

sentry-supervisor-program-file-absent:
  file.absent:
    - name: {{ sentry.supervisor.confdir }}/{{ program }}.conf
    - require:
      - sentry_program: sentry-supervisor-program-dead

sentry-supervisor-program-forgotten:
  cmd.run:
    - name: supervisorctl update {{ program }}
    - onlyif: supervisorctl pid
    - onchanges:
      - file: sentry-supervisor-program-file-absent
