{#- From a .deb file: a local path, or an http(s) URL fetched (and hash-checked) first. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set package = sentry.package %}
{%- set local_deb = package.deb %}

include:
  - {{ tplroot }}.server.guard

{%- if not package.deb.startswith("/") %}
{%- set local_deb = "/var/cache/sentry-formula/" ~ package.deb.split("/") | last %}
sentry-package-deb-downloaded:
  file.managed:
    - name: {{ local_deb }}
    - source: {{ package.deb }}
    - source_hash: {{ package.deb_hash or "null" }}
    - skip_verify: {{ not package.deb_hash }}
    - makedirs: true
    - require_in:
      - pkg: sentry-package-installed
{%- endif %}

sentry-package-installed:
  pkg.installed:
    - sources:
      - {{ package.name }}: {{ local_deb }}
    - require:
      - sentry_server: sentry-server-no-interrupted-operation
