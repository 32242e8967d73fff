{#- Orchestrated upgrade of a master and its replicas:

        salt-run state.orchestrate sentry.upgrade   (pillar sentry:upgrade, see README)

    1. the replicas are caught up, then the front sends reads to them (sentry:front:drained: [master]);
    2. the master upgrades by export, new package, import into a fresh serverdir and a
       health check (sentry_upgrade.master; it rolls itself back on failure);
    3. reads go back to the master while the replicas, out of rotation, are
       upgraded one by one and resynced from it (sentry_upgrade.replica);
    4. the front takes them back, and every minion reports its last upgrade.
    Minions already at the version are left alone; nothing is ever deleted. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set upgrade = sentry.upgrade %}
{%- macro fail(message) %}{% do raise("sentry.upgrade: " ~ message) %}{% endmacro %}

{%- if not upgrade.version %}{{ fail("sentry:upgrade:version (the Debian version to go to, e.g. 6.20.3-1) is required") }}{% endif %}
{%- if not upgrade.master %}{{ fail("sentry:upgrade:master (the target of the master minion) is required") }}{% endif %}

{#- Who is there, and at which version: asked once, before anything changes. #}
{#- sentry_server.version answers with the package the instance was deployed from, whatever its name. #}
{%- macro minions(target, function="sentry_server.version") -%}
  {{- (salt["saltutil.cmd"](target, function, tgt_type="compound", timeout=30) if target else {}) | json -}}
{%- endmacro %}
{%- set masters = minions(upgrade.master) | load_json %}
{%- set replicas = minions(upgrade.replicas) | load_json %}
{%- set fronts = minions(upgrade.front, "test.ping") | load_json %}
{%- if masters | length != 1 %}
  {{- fail("sentry:upgrade:master must match exactly one minion that answers, matched " ~ (masters | list | sort | json)) }}
{%- endif %}
{%- if upgrade.front and not fronts %}{{ fail("sentry:upgrade:front " ~ upgrade.front ~ " matched no minion that answers") }}{% endif %}
{%- set master_id = masters | list | first %}
{%- set replica_ids = replicas | list | sort %}
{%- set front_ids = fronts | list | sort %}
{%- set before = {} %}
{%- for id, answer in (masters | dictsort) + (replicas | dictsort) %}
  {%- do before.update({id: answer.ret.package if answer.ret is mapping and answer.ret.package else ""}) %}
{%- endfor %}
{%- if not before[master_id] %}
  {{- fail(master_id ~ " (master) has no sentry deployed (apply sentry there first): " ~ (masters[master_id].ret | json)) }}
{%- endif %}
{%- set master_pending = before[master_id] != upgrade.version %}
{#- A freshly imported master has a new identity: every replica is then made again from it. #}
{%- set replicas_pending = [] %}
{%- for id in replica_ids if master_pending or before[id] != upgrade.version %}{% do replicas_pending.append(id) %}{% endfor %}
{%- set function_timeout = upgrade.step_timeout %}

{%- if not master_pending and not replicas_pending %}
sentry-upgrade-nothing-to-do:
  test.succeed_without_changes:
    - name: "all of {{ before | list | sort | join(', ') }} run sentry {{ upgrade.version }}"
{%- else %}

sentry-upgrade-plan:
  test.show_notification:
    - text: >-
        sentry {{ upgrade.version }}: master {{ master_id }} ({{ before[master_id] }}{{ "" if master_pending else ", done" }});
        replicas {{ replica_ids | join(", ") or "none: reads are down while the master upgrades" }};
        front {{ front_ids | join(", ") or "none: clients reading from the master see it go" }}.
        Before: {{ before | json }}

{#- The modules read settings (master_url, ports) from pillar: the one they run with must be today's. #}
sentry-upgrade-pillar-refreshed:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: {{ ([master_id] + replica_ids) | json }}
    - tgt_type: list
    - kwarg:
        wait: true
    - require:
      - test: sentry-upgrade-plan
    - require_in:
{%- if master_pending %}
      - salt: sentry-upgrade-master
{%- endif %}
{%- for id in replicas_pending %}
      - salt: sentry-upgrade-replica-{{ id }}
{%- endfor %}

{%- if master_pending %}
{%- if replica_ids and front_ids %}
sentry-upgrade-replicas-caught-up:
  salt.function:
    - name: sentry_upgrade.wait_synced
    - tgt: {{ replica_ids | json }}
    - tgt_type: list
    - kwarg:
        timeout: {{ upgrade.sync_timeout }}
    - timeout: {{ upgrade.sync_timeout + 60 }}
    - require:
      - salt: sentry-upgrade-pillar-refreshed

sentry-upgrade-reads-to-replicas:
  salt.state:
    - tgt: {{ front_ids | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
    - pillar:
        sentry:
          front:
            drained:
              - master
    - require:
      - salt: sentry-upgrade-replicas-caught-up
    - require_in:
      - salt: sentry-upgrade-master
{%- endif %}

sentry-upgrade-master:
  salt.function:
    - name: sentry_upgrade.master
    - tgt: {{ master_id }}
    - arg:
      - "{{ upgrade.version }}"
    - kwarg:
        refresh: {{ upgrade.refresh }}
        reads_elsewhere: {{ "true" if replica_ids and front_ids else "false" }}
    - timeout: {{ function_timeout }}
    - require:
      - test: sentry-upgrade-plan

{%- if front_ids %}
{#- The master rolled itself back: the front goes back to what its pillar says. #}
sentry-upgrade-reads-back-after-failure:
  salt.state:
    - tgt: {{ front_ids | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
    - onfail:
      - salt: sentry-upgrade-master
{%- endif %}
{%- endif %}

{%- if front_ids and replicas_pending %}
sentry-upgrade-reads-to-master:
  salt.state:
    - tgt: {{ front_ids | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
    - pillar:
        sentry:
          front:
            drained:
              - replicas
{%- if master_pending %}
    - require:
      - salt: sentry-upgrade-master
{%- endif %}
{%- endif %}

{%- set previous = namespace(step="salt: sentry-upgrade-master" if master_pending else "test: sentry-upgrade-plan") %}
{%- for id in replicas_pending %}
sentry-upgrade-replica-{{ id }}:
  salt.function:
    - name: sentry_upgrade.replica
    - tgt: {{ id }}
    - arg:
      - "{{ upgrade.version }}"
    - kwarg:
        refresh: {{ upgrade.refresh }}
        sync_timeout: {{ upgrade.sync_timeout }}
        reads_elsewhere: {{ "true" if front_ids else "false" }}
    - timeout: {{ function_timeout }}
    - require:
      - {{ previous.step }}
{%- if front_ids %}
      - salt: sentry-upgrade-reads-to-master
{%- endif %}
{%- set previous.step = "salt: sentry-upgrade-replica-" ~ id %}
{%- endfor %}

{%- if front_ids %}
sentry-upgrade-reads-to-all:
  salt.state:
    - tgt: {{ front_ids | json }}
    - tgt_type: list
    - sls: {{ tplroot }}.front
    - require:
      - {{ previous.step }}
{%- endif %}

sentry-upgrade-summary:
  salt.function:
    - name: sentry_upgrade.last
    - tgt: {{ ([master_id] + replica_ids) | json }}
    - tgt_type: list
    - require:
      - {{ previous.step }}
{%- endif %}
