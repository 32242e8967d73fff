{#- From an apt repository this state adds (package:apt_repo), then as 'repo'. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set apt_repo = sentry.package.apt_repo %}

include:
  - {{ tplroot }}.server.guard

{%- if apt_repo.key_url %}
sentry-package-apt-keyring:
  file.managed:
    - name: {{ apt_repo.keyring }}
    - source: {{ apt_repo.key_url }}
    - skip_verify: true
    - mode: "0644"
    - require_in:
      - pkgrepo: sentry-package-apt-repo
{%- endif %}

sentry-package-apt-repo:
  pkgrepo.managed:
    - name: {{ apt_repo.line }}
    - file: {{ apt_repo.file }}
    - refresh: true
    - require_in:
      - pkg: sentry-package-installed

sentry-package-installed:
  pkg.installed:
    - name: {{ sentry.package.name }}
    - version: {{ sentry.package.version or "null" }}
    - require:
      - sentry_server: sentry-server-no-interrupted-operation
