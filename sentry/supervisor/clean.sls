{#- Stop and forget the program and the instance's settings; supervisor itself stays (other programs may use it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-supervisor-program-absent:
  sentry_program.absent:
    - name: {{ sentry.server.program }}
    - conf_file: {{ sentry.supervisor.confdir }}/{{ sentry.server.program }}.conf
    - socket_path: {{ sentry.supervisor.socket }}

sentry-supervisor-in-sync-absent:
  sentry_program.absent:
    - name: {{ sentry.derived.in_sync.program }}
    - conf_file: {{ sentry.derived.in_sync.conf_file }}
    - socket_path: {{ sentry.supervisor.socket }}

sentry-supervisor-in-sync-flag-absent:
  file.absent:
    - name: {{ sentry.derived.in_sync.flag }}
    - require:
      - sentry_program: sentry-supervisor-in-sync-absent

{#- Shared by a host's replicas: one still running keeps its copy in memory until its next apply. #}
sentry-supervisor-in-sync-script-absent:
  file.absent:
    - name: {{ sentry.derived.in_sync.script }}
    - require:
      - sentry_program: sentry-supervisor-in-sync-absent

sentry-supervisor-ca-bundle-absent:
  file.absent:
    - name: {{ sentry.derived.ca.bundle }}

sentry-supervisor-instance-settings-absent:
  file.absent:
    - name: /etc/sentry/instances/{{ sentry.server.program }}.json

{#- The folders were made for the settings (and the theme): leave no empty one behind, whichever clean runs last. #}
sentry-supervisor-instance-settings-dir-absent:
  cmd.run:
    - name: rmdir /etc/sentry/instances && rmdir --ignore-fail-on-non-empty /etc/sentry
    - onlyif:
      - test -d /etc/sentry/instances && test -z "$(ls -A /etc/sentry/instances)"
    - require:
      - file: sentry-supervisor-instance-settings-absent
      - file: sentry-supervisor-ca-bundle-absent
