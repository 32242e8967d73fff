{#- Debian's nginx in front of the server; reloaded only when the site changed. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- set nginx = sentry.nginx %}
{%- set site_file = nginx.sites_available ~ "/" ~ nginx.site ~ ".conf" %}

include:
  - {{ tplroot }}.user

sentry-nginx-package:
  pkg.installed:
    - name: {{ nginx.package }}

{#- Release files are read from the serverdir (0750): nginx's user joins the group. #}
sentry-nginx-reads-serverdir:
  group.present:
    - name: {{ sentry.user.group }}
    - addusers:
      - www-data
    - require:
      - pkg: sentry-nginx-package
      - user: sentry-user

{#- nginx's master (root) reads it; the service group may, no one else. #}
sentry-nginx-site-file:
  file.managed:
    - name: {{ site_file }}
    - source: {{ sentry.derived.sources["nginx-site.conf.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: {{ sentry.user.group }}
    - mode: "0640"
    - require:
      - pkg: sentry-nginx-package
      - group: sentry-user-group

sentry-nginx-site-enabled:
  file.symlink:
    - name: {{ nginx.sites_enabled }}/{{ nginx.site }}.conf
    - target: {{ site_file }}
    - require:
      - file: sentry-nginx-site-file

{%- if nginx.disable_default_site %}
sentry-nginx-default-site:
  file.absent:
    - name: {{ nginx.sites_enabled }}/default
    - require:
      - pkg: sentry-nginx-package
{%- else %}
sentry-nginx-default-site:
  test.nop: []
{%- endif %}

sentry-nginx-config-valid:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: sentry-nginx-site-file
      - file: sentry-nginx-site-enabled
      - sentry-nginx-default-site

sentry-nginx-service:
  service.running:
    - name: {{ nginx.service }}
    - enable: true
    - reload: true
    - require:
      - cmd: sentry-nginx-config-valid
    - watch:
      - file: sentry-nginx-site-file
      - file: sentry-nginx-site-enabled
      - sentry-nginx-default-site
      - group: sentry-nginx-reads-serverdir
