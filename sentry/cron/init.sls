{#- The host's cron, which runs the jobs of sentry.backup and sentry.monitor: installed and running. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-cron-package:
  pkg.installed:
    - name: {{ sentry.cron.package }}

{#- Started through systemd when it is PID 1, else through Debian's init script. #}
sentry-cron-service:
  sentry_service.running:
    - name: {{ sentry.cron.service }}
    - enable: true
    - require:
      - pkg: sentry-cron-package
