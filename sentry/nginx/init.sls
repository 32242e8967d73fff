{#- Debian's nginx in front of the server; reloaded only when the site changed. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- from tplroot ~ "/nginx/check.jinja" import site_check with context %}
{%- set nginx = sentry.nginx %}
{%- set site_file = nginx.sites_available ~ "/" ~ nginx.site ~ ".conf" %}

{#- Another enabled site on our port would take our requests (or fail nginx -t
    late, after the server restarted): refuse at render. Sharing a port by name
    is fine: a server_name of our own and default_server false. #}
{%- set ports = {nginx.port: "sentry:nginx:port"} %}
{%- if nginx.tls.enabled %}{% do ports.update({nginx.tls.port: "sentry:nginx:tls:port"}) %}{% endif %}
{%- set ours = [".", "..", nginx.site ~ ".conf"] + (["default"] if nginx.disable_default_site else []) %}
{%- if (nginx.server_name == "_" or nginx.default_server) and salt["file.directory_exists"](nginx.sites_enabled) %}
  {%- for name in salt["file.readdir"](nginx.sites_enabled) | sort if name not in ours %}
    {%- set path = nginx.sites_enabled ~ "/" ~ name %}
    {%- set lines = salt["file.read"](path).splitlines() if salt["file.file_exists"](path) else [] %}
    {%- set text = lines | map("regex_replace", "#.*", "") | join(" ") %}
    {%- for statement in text.replace("{", ";").replace("}", ";").split(";") %}
      {%- set words = statement.split() %}
      {%- if words[:1] == ["listen"] and words | length > 1 and not words[1].startswith("unix:") %}
        {#- listen 80, [::]:80, 10.0.0.1:80, or an address alone (port 80) #}
        {%- set port = words[1].rsplit("]", 1)[-1].rsplit(":", 1)[-1] if ":" in words[1] else words[1] %}
        {%- set port = port | int if port.isdigit() else 80 %}
        {%- if port in ports %}
          {%- set taken = ports[port] ~ " " ~ port ~ " is already used by " ~ path ~ " (listen " ~ words[1:] | join(" ") ~ ")" %}
          {%- do raise("sentry pillar: " ~ taken ~ ": choose another port, or share it by name"
                       ~ " with sentry:nginx:server_name and sentry:nginx:default_server false") %}
        {%- endif %}
      {%- endif %}
    {%- endfor %}
  {%- endfor %}
{%- endif %}

include:
  - {{ tplroot }}.user
  - {{ tplroot }}.server.guard
  - {{ tplroot }}.nginx.default_site

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
    - check_cmd: {{ site_check(site_file, nginx.sites_enabled) | yaml_encode }}
    - require:
      - pkg: sentry-nginx-package
      - group: sentry-user-group
      - sentry-nginx-default-site  {#- set aside first: the check sees the configuration as it will be #}
{%- if nginx.cache.enabled %}

{#- Where nginx keeps mirror pages (sentry:nginx:cache): its workers write there. #}
sentry-nginx-page-cache:
  file.directory:
    - name: {{ nginx.cache.dir }}/{{ nginx.site }}
    - user: www-data
    - group: root
    - mode: "0700"
    - makedirs: true
    - require:
      - pkg: sentry-nginx-package
    - require_in:
      - file: sentry-nginx-site-file
      - cmd: sentry-nginx-config-valid
{%- endif %}

{%- set auth_cache = sentry.derived.auth_cache %}
{%- if auth_cache.enabled %}

{#- Under lockdown nginx keeps passwords' successful checks (sentry:auth:lockdown_cache_seconds), keyed by
    HMACs computed with ngx_set_misc and a key made here once (never in Salt's output). #}
sentry-nginx-auth-cache-module:
  pkg.installed:
    - name: {{ sentry.auth.lockdown_cache_package }}
    - require:
      - pkg: sentry-nginx-package
    - require_in:
      - file: sentry-nginx-site-file

sentry-nginx-auth-cache-key:
  cmd.run:
    - name: >-
        umask 077 && key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') &&
        printf 'set $%s "%s";\n' {{ auth_cache.name }}_key "$key"
        > {{ auth_cache.key_file }}.new && mv {{ auth_cache.key_file }}.new {{ auth_cache.key_file }}
    - creates: {{ auth_cache.key_file }}
    - require:
      - pkg: sentry-nginx-package
    - require_in:
      - file: sentry-nginx-site-file

sentry-nginx-auth-cache:
  file.directory:
    - name: {{ auth_cache.dir }}
    - user: www-data
    - group: root
    - mode: "0700"
    - makedirs: true
    - require:
      - pkg: sentry-nginx-package
    - require_in:
      - file: sentry-nginx-site-file
      - cmd: sentry-nginx-config-valid
{%- endif %}

sentry-nginx-site-enabled:
  file.symlink:
    - name: {{ nginx.sites_enabled }}/{{ nginx.site }}.conf
    - target: {{ site_file }}
    - require:
      - file: sentry-nginx-site-file

sentry-nginx-config-valid:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: sentry-nginx-site-file
      - file: sentry-nginx-site-enabled
      - sentry-nginx-default-site

sentry-nginx-service:
  sentry_service.running:
    - name: {{ nginx.service }}
    - enable: true
    - reload: true
    - require:
      - cmd: sentry-nginx-config-valid
      {#- not started over what an interrupted import or upgrade left (an upgrade stops it) #}
      - sentry_server: sentry-server-no-interrupted-operation
    - watch:
      - file: sentry-nginx-site-file
      - file: sentry-nginx-site-enabled
      - sentry-nginx-default-site
      - group: sentry-nginx-reads-serverdir
