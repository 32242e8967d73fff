{#- Stop scheduling backups and drills of this instance. The backups, their records and cron itself stay. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-backup-schedule-absent:
  file.absent:
    - name: {{ sentry.derived.backup.cron_file }}

sentry-backup-settings-absent:
  file.absent:
    - name: /etc/sentry/backup/{{ sentry.server.program }}.json

sentry-backup-log-rotation-absent:
  file.absent:
    - name: {{ sentry.derived.backup.logrotate_file }}
