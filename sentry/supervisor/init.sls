{#- Debian's supervisor runs the server; it restarts only when what it reads changed. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- set supervisor, program = sentry.supervisor, sentry.server.program %}
{%- set conf_file = supervisor.confdir ~ "/" ~ program ~ ".conf" %}
{#- A proxy login in the file, now or before this run, keeps its diff out of state output. #}
{%- set conf_has_secrets = sentry.derived.environment_has_secrets
      or (salt["file.file_exists"](conf_file) and salt["file.search"](conf_file, "PROXY=\"[a-z]+://[^/\"]*@")) %}

include:
  - {{ tplroot }}.package
  - {{ tplroot }}.server
  - {{ tplroot }}.auth
{%- if sentry.theme.enabled %}
  - {{ tplroot }}.theme
{%- endif %}

{#- What the modules (sentry_server, sentry_data, sentry_upgrade) read about this instance: no secrets.
    It comes and goes with the instance's program. The path is the contract with _utils/sentry_settings.py. #}
sentry-supervisor-instance-settings:
  file.serialize:
    - name: /etc/sentry/instances/{{ program }}.json
    - serializer: json
    - makedirs: true
    - user: root
    - group: root
    - mode: "0644"
    - dataset:
        program: {{ program | json }}
        serverdir: {{ sentry.server.serverdir | json }}
        backup_dir: {{ salt["file.dirname"](sentry.server.serverdir) | json }}
        user: {{ sentry.user.name | json }}
        group: {{ sentry.user.group | json }}
        home: {{ sentry.user.home | json }}
        package: {{ sentry.package.name | json }}
        url: {{ ("http://" ~ sentry.server.host ~ ":" ~ sentry.server.port) | json }}
        master_url: {{ sentry.server.master_url | json }}
        ca_file: {{ sentry.derived.ca.file | json }}
        role: {{ ("replica" if sentry.server.master_url else sentry.server.role) | json }}
        nginx_service: {{ sentry.nginx.service | json }}
        supervisor_socket: {{ sentry.supervisor.socket | json }}
        ready_timeout: {{ sentry.supervisor.ready_timeout }}
        health: {{ sentry.derived.health | json }}
    - require:
      - file: sentry-supervisor-ca-bundle

sentry-supervisor-package:
  pkg.installed:
    - name: {{ supervisor.package }}

{#- Started through systemd when it is PID 1, else through Debian's init script. #}
sentry-supervisor-service:
  sentry_service.running:
    - name: {{ supervisor.service }}
    - enable: true
    - require:
      - pkg: sentry-supervisor-package

{#- The CAs the server trusts when sentry:mirror:ca_certificates names some. Public certificates, but
    the whole store: no diff of it in state output. A CA that TLS cannot load fails here, naming it,
    before the file is put in place: the program file keeps what it named. #}
{%- if sentry.mirror.ca_certificates %}
sentry-supervisor-ca-bundle:
  file.managed:
    - name: {{ sentry.derived.ca.bundle }}
    - source: {{ sentry.derived.sources["ca-bundle.pem.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - makedirs: true
    - user: root
    - group: root
    - mode: "0644"
    - show_changes: false
    - check_cmd: |-
        /opt/virtualenvs/sentry/bin/python -c "
        import re, ssl, sys
        text = open(sys.argv[1]).read()
        named = r'# (\S+) [(]sentry:mirror:ca_certificates[)]\n(-----BEGIN .*?-----END CERTIFICATE-----)'
        for name, pem in re.findall(named, text, re.S):
            try:
                ssl.create_default_context(cadata=pem)
            except ssl.SSLError as exc:
                print(f'sentry:mirror:ca_certificates:{name} is no CA certificate TLS can load ({exc})')
                sys.exit(1)
        ssl.create_default_context(cafile=sys.argv[1])
        "
    - require:
      - pkg: sentry-package-installed
{%- else %}
sentry-supervisor-ca-bundle:
  file.absent:
    - name: {{ sentry.derived.ca.bundle }}
{%- endif %}

{#- supervisord (root) reads it; the service group may, no one else. #}
sentry-supervisor-program-file:
  file.managed:
    - name: {{ conf_file }}
    - source: {{ sentry.derived.sources["supervisor-program.conf.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: {{ sentry.user.group }}
    - mode: "0640"
    - show_changes: {{ not conf_has_secrets }}
    - require:
      - pkg: sentry-supervisor-package
      - group: sentry-user-group
      - file: sentry-supervisor-ca-bundle

{#- The file is watched too: a dry run then plans the restart a changed file brings
    (a real run applies the change itself and restarts once). #}
sentry-supervisor-program-running:
  sentry_program.running:
    - name: {{ program }}
    - conf_file: {{ conf_file }}
    - ready_url: {{ sentry.derived.server_url }}/+api
    - ready_timeout: {{ supervisor.ready_timeout }}
    - socket_path: {{ supervisor.socket }}
    - require:
      - sentry_service: sentry-supervisor-service
      - sentry_server: sentry-server-initialised
      - file: sentry-server-logdir
    - watch:
      - file: sentry-supervisor-program-file
      - pkg: sentry-package-installed
      - sentry-server-secretfile
      - file: sentry-auth-ldap-config
      - file: sentry-supervisor-ca-bundle
{%- if sentry.theme.enabled %}
      - file: sentry-theme-files
{%- endif %}

{#- On a replica: a watcher keeps a flag while it has what its master has; its nginx refuses
    sentry.front's reads without it (the front then reads from another node). #}
{%- set in_sync = sentry.derived.in_sync %}
{%- if sentry.server.master_url %}
sentry-supervisor-in-sync-script:
  file.managed:
    - name: {{ in_sync.script }}
    - source: salt://{{ tplroot }}/files/default/sentry-in-sync.py
    - makedirs: true
    - user: root
    - group: root
    - mode: "0755"

sentry-supervisor-in-sync-file:
  file.managed:
    - name: {{ in_sync.conf_file }}
    - source: {{ sentry.derived.sources["supervisor-in-sync.conf.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: root
    - group: {{ sentry.user.group }}
    - mode: "0640"
    - show_changes: {{ not conf_has_secrets }}
    - require:
      - pkg: sentry-supervisor-package
      - group: sentry-user-group
      - file: sentry-supervisor-ca-bundle

sentry-supervisor-in-sync-running:
  sentry_program.running:
    - name: {{ in_sync.program }}
    - conf_file: {{ in_sync.conf_file }}
    - socket_path: {{ supervisor.socket }}
    - require:
      - sentry_service: sentry-supervisor-service
      - file: sentry-server-logdir
    - watch:
      - file: sentry-supervisor-in-sync-script
      - file: sentry-supervisor-in-sync-file
      - file: sentry-supervisor-ca-bundle
{%- else %}
sentry-supervisor-in-sync-absent:
  sentry_program.absent:
    - name: {{ in_sync.program }}
    - conf_file: {{ in_sync.conf_file }}
    - socket_path: {{ supervisor.socket }}

sentry-supervisor-in-sync-flag-absent:
  file.absent:
    - name: {{ in_sync.flag }}
{%- endif %}
