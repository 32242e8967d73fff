{#- Remove the site, put Debian's default site back if sentry set it aside, and
    reload nginx; nginx itself stays (other sites may use it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set nginx = sentry.nginx %}

include:
  - {{ tplroot }}.nginx.default_site.clean

sentry-nginx-site-enabled-absent:
  file.absent:
    - name: {{ nginx.sites_enabled }}/{{ nginx.site }}.conf
    - require_in:
      - file: sentry-nginx-default-site-restored

sentry-nginx-site-file-absent:
  file.absent:
    - name: {{ nginx.sites_available }}/{{ nginx.site }}.conf

sentry-nginx-page-cache-absent:
  file.absent:
    - name: {{ nginx.cache.dir }}/{{ nginx.site }}
    - require:
      - cmd: sentry-nginx-reloaded

sentry-nginx-auth-cache-absent:
  file.absent:
    - names:
      - {{ sentry.derived.auth_cache.dir }}
      - {{ sentry.derived.auth_cache.key_file }}
    - require:
      - cmd: sentry-nginx-reloaded

sentry-nginx-reloaded:
  cmd.run:
    - name: nginx -t -q && nginx -s reload
    - onlyif: test -e /run/nginx.pid
    - onchanges:
      - file: sentry-nginx-site-enabled-absent
      - file: sentry-nginx-default-site-restored
