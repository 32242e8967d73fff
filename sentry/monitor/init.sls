{#- Watch the instance (opt-in: monitor:enabled makes it part of `sentry`): cron writes its metrics for node_exporter's
    textfile collector every minute, and the sentry_health beacon fires Salt events when its
    health changes level. Both ask sentry_monitor, which reads the thresholds from the
    instance's settings (sentry.supervisor renders them from monitor:health). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- set monitor, program = sentry.monitor, sentry.server.program %}
{%- set derived = sentry.derived.monitor %}
{%- set salt_call = sentry.derived.cron.salt_call ~ " -c " ~ sentry.derived.cron.conf_dir ~ " --local --out=quiet --log-level=warning" %}

include:
  - {{ tplroot }}.supervisor
  - {{ tplroot }}.cron

{#- The textfile collector's directory (prometheus-node-exporter owns it where installed). #}
sentry-monitor-metrics-dir:
  file.directory:
    - name: {{ salt["file.dirname"](monitor.metrics_file) }}
    - makedirs: true

{#- salt-call --local with this minion's configuration: the synced modules, no master asked. #}
sentry-monitor-cron-job:
  file.managed:
    - name: {{ derived.cron_file }}
    - user: root
    - group: root
    - mode: "0644"
    - contents: |
        # sentry.monitor: the metrics of {{ program }} for node_exporter, every minute (managed by Salt)
        * * * * * root {{ salt_call }} sentry_monitor.write_metrics {{ monitor.metrics_file }} instance={{ program }} >/dev/null
    - require:
      - file: sentry-monitor-metrics-dir
      - file: sentry-supervisor-instance-settings
      - sentry_service: sentry-cron-service

{#- Read when salt-minion starts (restart it after the first apply that adds or changes it). #}
sentry-monitor-beacon-config:
{%- if monitor.beacon %}
  file.serialize:
    - name: {{ derived.beacon_file }}
    - serializer: yaml
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: true
    - dataset:
        beacons:
          sentry_health_{{ program }}:
            - beacon_module: sentry_health
            - instance: {{ program }}
            - interval: {{ monitor.beacon_interval }}
{%- else %}
  file.absent:
    - name: {{ derived.beacon_file }}
{%- endif %}
{%- if derived.rules_file %}

{#- Alert rules on these metrics (sentry-<program>.rules.yml), for the Prometheus that loads monitor:rules_dir:
    fatal thresholds of monitor:health page, warn ones do not. #}
sentry-monitor-alert-rules:
  file.managed:
    - name: {{ derived.rules_file }}
    - source: {{ sentry.derived.sources["prometheus-rules.yml.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - makedirs: true
    - user: root
    - group: root
    - mode: "0644"
{%- endif %}
