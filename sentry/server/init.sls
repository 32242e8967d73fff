{#- The data directory, the shared secret, and the one-time initialisation. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set server, user = sentry.server, sentry.user %}
{%- if not (server.master_url or server.root_password) %}
  {%- do raise("sentry pillar: sentry:server:root_password is required (empty or missing) unless sentry:server:master_url makes this a replica") %}
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
  cmd.run:
    - name: /opt/virtualenvs/sentry/bin/devpi-gen-secret --secretfile {{ server.secretfile }}
    - runas: {{ user.name }}
    - umask: "077"
    - creates: {{ server.secretfile }}
    - require:
      - pkg: sentry-package-installed
      - file: sentry-user-home
{%- endif %}

{#- Never re-initialise: the guard is devpi's own marker of an initialised serverdir. #}
sentry-server-initialised:
  cmd.run:
    - name: >-
        /usr/sbin/sentry-server --init --serverdir {{ server.serverdir }}
        {%- if server.master_url %} --master-url {{ server.master_url }}{% else %} --root-passwd-file -{% endif %}
        {%- if server.no_root_pypi %} --no-root-pypi{% endif %}
{%- if not server.master_url %}
    - stdin: {{ (server.root_password ~ "\n") | json }}
{%- endif %}
    - runas: {{ user.name }}
    - cwd: {{ user.home }}
    - creates: {{ server.serverdir }}/.nodeinfo
    - output_loglevel: quiet
    - require:
      - pkg: sentry-package-installed
      - file: sentry-server-serverdir
