{#- Scheduled backups and restore drills of this instance on the host's cron (opt-in: backup:enabled).
    The work is sentry_backup.run and sentry_backup.drill; this state only schedules them. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set backup, derived = sentry.backup, sentry.derived.backup %}
{%- set program = sentry.server.program %}

include:
  - {{ tplroot }}.cron

{#- Backups hold password hashes: root's and the service group's only. #}
sentry-backup-folder:
  file.directory:
    - name: {{ derived.dir }}
    - user: root
    - group: {{ sentry.user.group }}
    - mode: "0750"
    - makedirs: true

{#- What sentry_backup reads (the cron job runs salt-call --local: no pillar there). No secrets. #}
sentry-backup-settings:
  file.serialize:
    - name: /etc/sentry/backup/{{ program }}.json
    - serializer: json
    - makedirs: true
    - user: root
    - group: root
    - mode: "0644"
    - dataset:
        dir: {{ derived.dir | json }}
        keep: {{ backup.keep }}
        live: {{ backup.live | json }}

sentry-backup-schedule:
  file.managed:
    - name: {{ derived.cron_file }}
    - source: salt://{{ tplroot }}/backup/files/cron.jinja
    - template: jinja
    - context:
        program: {{ program | json }}
        schedule: {{ backup.schedule | json }}
        drill_schedule: {{ backup.drill_schedule | json }}
        salt_call: {{ sentry.derived.cron.salt_call | json }}
        conf_dir: {{ sentry.derived.cron.conf_dir | json }}
        log: {{ derived.log | json }}
    - user: root
    - group: root
    - mode: "0644"
    - require:
      - sentry_service: sentry-cron-service
      - file: sentry-backup-folder
      - file: sentry-backup-settings

{#- The jobs' log grows by every run: Debian's logrotate turns it over weekly. #}
sentry-backup-logrotate-package:
  pkg.installed:
    - name: {{ backup.logrotate_package }}

sentry-backup-log-rotation:
  file.managed:
    - name: {{ derived.logrotate_file }}
    - user: root
    - group: root
    - mode: "0644"
    - contents: |
        # sentry.backup: the log of {{ program }}'s backup and drill jobs (managed by Salt)
        {{ derived.log }} {
            weekly
            rotate {{ backup.log_weeks }}
            compress
            delaycompress
            missingok
            notifempty
            create 0640 root {{ sentry.user.group }}
        }
    - require:
      - pkg: sentry-backup-logrotate-package
