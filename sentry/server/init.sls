{#- The data directory, the shared secret, and the one-time initialisation. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set server, user = sentry.server, sentry.user %}
{%- if not (server.master_url or server.root_password) %}
  {%- do raise("sentry pillar: sentry:server:root_password is required (empty or missing) unless sentry:server:master_url makes this a replica") %}
{%- endif %}
{#- A replica must hold its master's secret (else 403 on /+changelog forever): a generated one never matches. #}
{%- if server.master_url and not server.secret and not salt["file.file_exists"](server.secretfile) %}
  {%- do raise("sentry pillar: sentry:server:secret (the master's secret) is required for a replica (sentry:server:master_url)"
               ~ " unless sentry:server:secretfile " ~ server.secretfile ~ " already holds it, and it does not exist") %}
{%- endif %}

include:
  - {{ tplroot }}.package
  - {{ tplroot }}.user

sentry-server-logdir:
  file.directory:
    - name: {{ server.logdir }}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: "0750"
    - require:
      - user: sentry-user

sentry-server-serverdir:
  file.directory:
    - name: {{ server.serverdir }}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: "0750"
    - makedirs: true
    - require:
      - file: sentry-user-home

{%- if server.secret %}
sentry-server-secretfile:
  file.managed:
    - name: {{ server.secretfile }}
    - contents_pillar: sentry:server:secret
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: "0600"
    - show_changes: false
    - require:
      - file: sentry-user-home
{%- else %}
sentry-server-secretfile:
  sentry_server.secret_present:
    - name: {{ server.secretfile }}
    - user: {{ user.name }}
    - require:
      - pkg: sentry-package-installed
      - file: sentry-user-home
{%- endif %}

{#- Never re-initialise; the password is read from pillar by the state itself. #}
sentry-server-initialised:
  sentry_server.initialised:
    - name: {{ server.serverdir }}
    - root_password_pillar: sentry:server:root_password
    - master_url: {{ server.master_url or "null" }}
    {#- root/pypi is made by sentry.bootstrap, with sentry:mirror's settings (unless
        server:no_root_pypi). devpi-init's would point at PyPI at the first start,
        which then fetches PyPI's whole project list before bootstrap points it elsewhere. #}
    - no_root_pypi: true
    - user: {{ user.name }}
    - require:
      - sentry_server: sentry-server-no-interrupted-operation
      - pkg: sentry-package-installed
      - file: sentry-server-serverdir
