{#- Debian's default site claims port 80 too. It is set aside, not deleted, so
    that sentry.clean can put it back as it was (sentry.nginx.default_site.clean). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set nginx = sentry.nginx %}

{%- if nginx.disable_default_site %}
sentry-nginx-default-site:
  file.rename:
    - name: {{ sentry.derived.default_site_aside }}/default
    - source: {{ nginx.sites_enabled }}/default
    - makedirs: true
    {#- Enabled again by hand since: the newer one is set aside. #}
    - force: true
    - require:
      - pkg: {{ nginx.package }}
{%- else %}
sentry-nginx-default-site:
  test.nop: []
{%- endif %}
