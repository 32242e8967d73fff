{#- Remove all but the newest sentry:prune_backups:keep of each kind of this instance's backups (data moved
    aside, data of failed attempts, exports) beside its serverdir: never the newest, never another
    instance's, never one an interrupted operation's trail names (sentry_data.prunable).
    Never part of `sentry`: an operator runs it when the backups are no longer wanted. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set keep = sentry.prune_backups.keep %}
{%- set where = salt["file.dirname"](sentry.server.serverdir) %}

{%- for path in salt["sentry_data.prunable"](keep, sentry.server.program) %}
sentry-prune-{{ path.split("/")[-1] }}:
  file.absent:
    - name: {{ path }}
{%- endfor %}

sentry-prune-backups-kept:
  test.succeed_without_changes:
    - name: "the newest {{ keep }} of each kind of backup of {{ sentry.server.serverdir }} in {{ where }} stay"
