{#- Remove all but the newest sentry:prune_backups:keep of each kind of backup
    (data moved aside, data of failed attempts, exports) beside the serverdir.
    Never part of `sentry`: an operator runs it when the backups are no longer wanted. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set keep = sentry.prune_backups.keep %}
{%- set found = salt["sentry_data.backups"](sentry.server.program) %}
{%- set where = salt["file.dirname"](sentry.server.serverdir) %}

{%- for kind, paths in found | dictsort %}
{%- for path in paths[keep:] %}
sentry-prune-{{ kind }}-{{ path.split("/")[-1] }}:
  file.absent:
    - name: {{ path }}
{%- endfor %}
{%- endfor %}

sentry-prune-backups-kept:
  test.succeed_without_changes:
    - name: "the newest {{ keep }} of each kind of backup in {{ where }} stay"
