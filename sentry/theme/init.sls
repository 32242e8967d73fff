{#- The web UI's theme (templates/, static/), passed to the server as --theme. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}

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
