{#- An nginx front for a master and its replicas (a host of its own, or a node).
    sentry.upgrade drains nodes through sentry:front:drained. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- from tplroot ~ "/nginx/check.jinja" import site_check with context %}
{%- set front, nginx = sentry.front, sentry.nginx %}
{%- set site_file = nginx.sites_available ~ "/" ~ front.site ~ ".conf" %}
{%- if not front.master %}
  {%- do raise("sentry pillar: sentry:front:master (host:port of the master's nginx) is required for sentry.front") %}
{%- endif %}

include:
  - {{ tplroot }}.nginx.default_site

sentry-front-nginx-package:
  pkg.installed:
    - name: {{ nginx.package }}

{#- nginx's master (root) reads it; no one else needs to. #}
sentry-front-site-file:
  file.managed:
    - name: {{ site_file }}
    - source: {{ sentry.derived.sources["nginx-front.conf.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: root
    - mode: "0640"
    - check_cmd: {{ site_check(site_file, nginx.sites_enabled) | yaml_encode }}
    - require:
      - pkg: sentry-front-nginx-package
      - sentry-nginx-default-site  {#- set aside first: the check sees the configuration as it will be #}
{%- if nginx.cache.enabled %}

{#- Where nginx keeps mirror pages (sentry:nginx:cache): its workers write there. #}
sentry-front-page-cache:
  file.directory:
    - name: {{ nginx.cache.dir }}/{{ front.site }}
    - user: www-data
    - group: root
    - mode: "0700"
    - makedirs: true
    - require:
      - pkg: sentry-front-nginx-package
    - require_in:
      - file: sentry-front-site-file
      - cmd: sentry-front-config-valid
{%- endif %}

sentry-front-site-enabled:
  file.symlink:
    - name: {{ nginx.sites_enabled }}/{{ front.site }}.conf
    - target: {{ site_file }}
    - require:
      - file: sentry-front-site-file

sentry-front-config-valid:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: sentry-front-site-file
      - file: sentry-front-site-enabled
      - sentry-nginx-default-site

{#- A reload: requests in flight finish on the old workers, none fails. #}
sentry-front-nginx-service:
  sentry_service.running:
    - name: {{ nginx.service }}
    - enable: true
    - reload: true
    - require:
      - cmd: sentry-front-config-valid
    - watch:
      - file: sentry-front-site-file
      - file: sentry-front-site-enabled
      - sentry-nginx-default-site
