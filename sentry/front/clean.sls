{#- Remove the front's site, put Debian's default site back if sentry set it
    aside, and reload nginx; nginx itself stays. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set front, nginx = sentry.front, sentry.nginx %}

include:
  - {{ tplroot }}.nginx.default_site.clean

sentry-front-site-enabled-absent:
  file.absent:
    - name: {{ nginx.sites_enabled }}/{{ front.site }}.conf
    - require_in:
      - file: sentry-nginx-default-site-restored

sentry-front-site-file-absent:
  file.absent:
    - name: {{ nginx.sites_available }}/{{ front.site }}.conf

sentry-front-reloaded:
  cmd.run:
    - name: nginx -t -q && nginx -s reload
    - onlyif: test -e /run/nginx.pid
    - onchanges:
      - file: sentry-front-site-enabled-absent
      - file: sentry-nginx-default-site-restored

sentry-front-page-cache-absent:
  file.absent:
    - name: {{ nginx.cache.dir }}/{{ front.site }}
    - require:
      - cmd: sentry-front-reloaded
