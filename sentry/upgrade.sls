{#- Orchestrated upgrade of a master and its replicas:

        salt-run saltutil.sync_runners              (once: the plan is a runner)
        salt-run state.orchestrate sentry.upgrade   (pillar sentry:upgrade, see docs/upgrades-and-recovery.md)

    The runner sentry_upgrade.plan asks every minion its version once and names
    the steps below that this run needs, in order; each step waits for the one
    before it. Minions already at the version are left alone; nothing is ever deleted. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- macro fail(message) %}{% do raise("sentry.upgrade: " ~ message) %}{% endmacro %}
{#- Rendered on the master, which has the formula's runners but not its execution modules (map.jinja's
    rules): only sentry:upgrade is read, checked here; each minion checks the rest of its pillar. #}
{%- import_yaml tplroot ~ "/defaults.yaml" as defaults %}
{%- set known = defaults.sentry.upgrade %}
{%- set given = salt["pillar.get"]("sentry:upgrade", {}) %}
{%- if given is not mapping %}{{ fail("sentry:upgrade must be a mapping, got " ~ (given | json)) }}{% endif %}
{%- for key, value in given | dictsort %}
  {%- if key not in known %}
    {{- fail("unknown key sentry:upgrade:" ~ key ~ " (known: " ~ (known | list | sort | join(", ")) ~ ")") }}
  {%- elif (known[key] is string and value is not string)
        or (known[key] is sameas true or known[key] is sameas false) != (value is sameas true or value is sameas false)
        or (known[key] is integer and value is not integer) %}
    {{- fail("sentry:upgrade:" ~ key ~ " must be like its default " ~ (known[key] | json) ~ ", got " ~ (value | json)) }}
  {%- endif %}
{%- endfor %}
{%- set upgrade = salt["slsutil.merge"](known, given, strategy="recurse") %}

{%- if "sentry_upgrade.plan" not in salt["saltutil.runner"]("doc.runner") %}
  {{- fail("the master lacks the formula's runner sentry_upgrade.plan: run 'salt-run saltutil.sync_runners' once") }}
{%- endif %}
{%- set plan = salt["saltutil.runner"]("sentry_upgrade.plan", kwarg={
      "version": upgrade.version, "master": upgrade.master,
      "replicas": upgrade.replicas, "front": upgrade.front, "method": upgrade.method}) %}
{%- if plan is not mapping %}{{ fail("sentry_upgrade.plan answered " ~ plan) }}{% endif %}
{%- if plan.error %}{{ fail(plan.error) }}{% endif %}
{%- set steps, after = plan.steps, plan.after %}
{%- macro require(step) %}
    - require:
      - {{ after[step] }}
{%- endmacro %}
{%- macro front(step, drained=none) %}
  salt.state:
    - tgt: {{ plan.fronts | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
{%- if drained %}
    - pillar:
        sentry:
          front:
            drained: [{{ drained }}]
{%- endif %}
{{- require(step) }}
{%- endmacro %}

{%- if "sentry-upgrade-nothing-to-do" in steps %}
sentry-upgrade-nothing-to-do:
  test.succeed_without_changes:
    - name: {{ plan.summary | json }}
{%- endif %}

{%- if "sentry-upgrade-plan" in steps %}
sentry-upgrade-plan:
  test.show_notification:
    - text: {{ plan.summary | json }}
{%- endif %}

{#- The modules read settings (master_url, ports) from pillar: the one they run with must be today's. #}
{%- if "sentry-upgrade-pillar-refreshed" in steps %}
sentry-upgrade-pillar-refreshed:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: {{ plan.minions | json }}
    - tgt_type: list
    - kwarg:
        wait: true
{{- require("sentry-upgrade-pillar-refreshed") }}
{%- endif %}

{%- if "sentry-upgrade-replicas-caught-up" in steps %}
sentry-upgrade-replicas-caught-up:
  salt.function:
    - name: sentry_upgrade.wait_synced
    - tgt: {{ plan.replicas | json }}
    - tgt_type: list
    - kwarg:
        timeout: {{ upgrade.sync_timeout }}
    - timeout: {{ upgrade.sync_timeout + 60 }}
{{- require("sentry-upgrade-replicas-caught-up") }}
{%- endif %}

{%- if "sentry-upgrade-reads-to-replicas" in steps %}
sentry-upgrade-reads-to-replicas:
{{- front("sentry-upgrade-reads-to-replicas", drained="master") }}
{%- endif %}

{#- Download, choose the method, stop, then snapshot, install, start (in place) or export, install, import,
    start; health check; it rolls itself back on failure. #}
{%- if "sentry-upgrade-master" in steps %}
sentry-upgrade-master:
  salt.function:
    - name: sentry_upgrade.master
    - tgt: {{ plan.master }}
    - arg:
      - {{ plan.version | json }}
    - kwarg:
        refresh: {{ upgrade.refresh | json }}
        reads_elsewhere: {{ plan.reads_elsewhere.master | json }}
        method: {{ upgrade.method | json }}
    - timeout: {{ upgrade.step_timeout }}
{{- require("sentry-upgrade-master") }}

{#- The master rolled itself back: the front goes back to what its pillar says. #}
{%- if plan.fronts %}
sentry-upgrade-reads-back-after-failure:
  salt.state:
    - tgt: {{ plan.fronts | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
    - onfail:
      - sentry-upgrade-master
{%- endif %}
{%- endif %}

{#- Replicas cannot follow a freshly imported master: they are out of rotation until remade. #}
{%- if "sentry-upgrade-reads-to-master" in steps %}
sentry-upgrade-reads-to-master:
{{- front("sentry-upgrade-reads-to-master", drained="replicas") }}
{%- endif %}

{%- for id in plan.replicas_pending %}
sentry-upgrade-replica-{{ id }}:
  salt.function:
    - name: sentry_upgrade.replica
    - tgt: {{ id }}
    - arg:
      - {{ plan.version | json }}
    - kwarg:
        refresh: {{ upgrade.refresh | json }}
        sync_timeout: {{ upgrade.sync_timeout }}
        reads_elsewhere: {{ plan.reads_elsewhere.replicas | json }}
        method: {{ upgrade.method | json }}
    - timeout: {{ upgrade.step_timeout }}
{{- require("sentry-upgrade-replica-" ~ id) }}
{%- endfor %}

{%- if "sentry-upgrade-reads-to-all" in steps %}
sentry-upgrade-reads-to-all:
{{- front("sentry-upgrade-reads-to-all") }}
{%- endif %}

{%- if "sentry-upgrade-summary" in steps %}
sentry-upgrade-summary:
  salt.function:
    - name: sentry_upgrade.last
    - tgt: {{ plan.minions | json }}
    - tgt_type: list
{{- require("sentry-upgrade-summary") }}
{%- endif %}
