{#- Logins from the company directory (sentry:auth:ldap): devpi-ldap's file, which the server reads at
    start-up (sentry.supervisor restarts it when the file changes). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry, template_context with context %}
{%- set ldap_config = sentry.derived.auth.ldap_config %}

include:
  - {{ tplroot }}.package
  - {{ tplroot }}.user

{%- if sentry.auth.ldap.urls %}

{#- The service user's alone: it holds the bind password. devpi-ldap checks it before it is put in
    place, so a file it would refuse never reaches the server. #}
sentry-auth-ldap-config:
  file.managed:
    - name: {{ ldap_config }}
    - source: {{ sentry.derived.sources["ldap.yaml.jinja"] | json }}
    - template: jinja
    - context:
        sentry: {{ template_context | json }}
    - user: {{ sentry.user.name }}
    - group: {{ sentry.user.group }}
    - mode: "0600"
    - makedirs: true
    - show_changes: false
    - check_cmd: >-
        /opt/virtualenvs/sentry/bin/python -c "import logging, sys; logging.basicConfig(format='%(message)s');
        from devpi_ldap.main import LDAP; LDAP(sys.argv[1])"
    - require:
      - pkg: sentry-package-installed
      - user: sentry-user
{%- else %}

sentry-auth-ldap-config:
  file.absent:
    - name: {{ ldap_config }}
{%- endif %}
