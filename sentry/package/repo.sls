{#- From an apt repository the host already knows; package:version pins it. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

include:
  - {{ tplroot }}.server.guard

sentry-package-installed:
  pkg.installed:
    - name: {{ sentry.package.name }}
    - version: {{ sentry.package.version or "null" }}
    - refresh: false
    - require:
      - sentry_server: sentry-server-no-interrupted-operation
