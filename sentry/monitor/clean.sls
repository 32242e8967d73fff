{#- Stop watching the instance: its cron job, metrics file and beacon go; cron itself stays. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-monitor-cron-job-absent:
  file.absent:
    - name: {{ sentry.derived.monitor.cron_file }}

sentry-monitor-metrics-file-absent:
  file.absent:
    - name: {{ sentry.monitor.metrics_file }}
    - require:
      - file: sentry-monitor-cron-job-absent

sentry-monitor-beacon-config-absent:
  file.absent:
    - name: {{ sentry.derived.monitor.beacon_file }}
