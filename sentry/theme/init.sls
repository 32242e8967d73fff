{#- The web UI's theme (templates/, static/), passed to the server as --theme. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- set source = sentry.theme.source %}
{#- file.recurse would fail late, after the package and the server states ran. #}
{%- if source %}
  {%- set path = source.split("?")[0].removeprefix("salt://").strip("/") %}
  {%- if not source.startswith("salt://") %}
    {%- do raise("sentry pillar: sentry:theme:source must be a salt:// directory, got " ~ (source | json)) %}
  {%- elif path not in salt["cp.list_master_dirs"](prefix=path) %}
    {%- do raise("sentry pillar: sentry:theme:source: no directory " ~ source ~ " on the salt fileserver (a directory with templates/ and static/)") %}
  {%- endif %}
{%- endif %}

include:
  - {{ tplroot }}.user

{#- Read by the server (the service group); written by root only. #}
sentry-theme-files:
  file.recurse:
    - name: {{ sentry.theme.dir }}
    - source: {{ sentry.derived.sources["theme"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: {{ sentry.user.group }}
    - file_mode: "0640"
    - dir_mode: "0750"
    - makedirs: true
    - clean: true
    - require:
      - group: sentry-user-group
