{#- Stop watching the instance: its cron job, metrics file and beacon go; cron itself stays. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-monitor-cron-job-absent:
  file.absent:
    - name: {{ sentry.derived.monitor.cron_file }}

{#- A run cron started just before its job went could write the file again after it is removed:
    wait for it (a run takes seconds) before removing the file. The file goes with this instance's
    job only: another instance may write the same path (monitor:metrics_file's default). #}
sentry-monitor-cron-run-finished:
  cmd.run:
    - name: >-
        timeout 60 sh -c 'while pgrep -f "sentry_monitor.write_metrics .*instance={{ sentry.server.program }}( |$)"
        >/dev/null; do sleep 1; done'
    - onchanges:
      - file: sentry-monitor-cron-job-absent

sentry-monitor-metrics-file-absent:
  file.absent:
    - name: {{ sentry.monitor.metrics_file }}
    - onchanges:
      - file: sentry-monitor-cron-job-absent
    - require:
      - cmd: sentry-monitor-cron-run-finished

sentry-monitor-beacon-config-absent:
  file.absent:
    - name: {{ sentry.derived.monitor.beacon_file }}

sentry-monitor-alert-rules-absent:
  file.absent:
    - name: {{ sentry.derived.monitor.rules_file or "/nonexistent/sentry-rules" }}
