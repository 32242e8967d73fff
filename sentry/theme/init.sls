{#- The web UI's theme (templates/, static/), passed to the server as --theme. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}

sentry-theme-files:
  file.recurse:
    - name: {{ sentry.theme.dir }}
    - source: {{ sentry.derived.sources["theme"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: root
    - file_mode: "0644"
    - dir_mode: "0755"
    - makedirs: true
    - clean: true
