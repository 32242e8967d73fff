{#- Users and indexes from pillar (sentry:bootstrap), on a master; replicas copy them.
    There is no clean twin: removing users would remove their packages. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set bootstrap, url, mirror = sentry.bootstrap, sentry.derived.server_url, sentry.mirror %}
{#- root/pypi as sentry:mirror says, unless bootstrap:indexes declares it itself. #}
{%- set indexes = {} %}
{%- if not sentry.server.no_root_pypi %}
  {%- set pypi = {"type": "mirror", "mirror_url": mirror.url, "mirror_cache_expiry": mirror.cache_expiry,
                  "mirror_use_external_urls": mirror.use_external_urls,
                  "mirror_no_project_list": mirror.no_project_list} %}
  {%- do indexes.update({"root/pypi": pypi}) %}
{%- endif %}
{%- for name, index in bootstrap.indexes | dictsort %}
  {%- do indexes.update({name: dict(indexes.get(name, {}), **index)}) %}
{%- endfor %}

include:
  - {{ tplroot }}.supervisor

{%- if not sentry.server.master_url %}

{#- A new root password in pillar is set on the server (which stops for a few seconds), never refused. #}
sentry-bootstrap-root-password:
  sentry_user.root_password:
    - name: root
    - password_pillar: sentry:server:root_password
    - url: {{ url }}
    - instance: {{ sentry.server.program }}
    - require:
      - sentry_program: sentry-supervisor-program-running

{#- Bases outside sentry:bootstrap:indexes must already be on the server:
    checked before any user or index is made, so a missing one changes nothing. #}
{%- set outside = {} %}
{%- for name, index in indexes | dictsort %}
  {%- set missing = index.get("bases", []) | reject("in", indexes | list) | list %}
  {%- if missing %}{% do outside.update({name: missing}) %}{% endif %}
{%- endfor %}

sentry-bootstrap-bases:
  sentry_index.bases_exist:
    - indexes: {{ outside | json }}
    - url: {{ url }}
    - require:
      - sentry_user: sentry-bootstrap-root-password
{%- for name, user in bootstrap.users | dictsort %}

sentry-bootstrap-user-{{ name }}:
  sentry_user.present:
    - name: {{ name }}
    - email: {{ user.get("email") | json }}
    - password_pillar: sentry:bootstrap:users:{{ name }}:password
    - url: {{ url }}
    - require:
      - sentry_user: sentry-bootstrap-root-password
      - sentry_index: sentry-bootstrap-bases
{%- endfor %}
{%- for name, index in indexes | dictsort %}

sentry-bootstrap-index-{{ name }}:
  sentry_index.present:
    - name: {{ name }}
{%- for key in ("type", "bases", "volatile", "acl_upload", "mirror_whitelist", "mirror_url", "mirror_cache_expiry",
                "mirror_use_external_urls", "mirror_no_project_list") if key in index %}
    - {{ key }}: {{ index[key] | json }}
{%- endfor %}
    - url: {{ url }}
    - require:
      - sentry_user: sentry-bootstrap-root-password
      - sentry_index: sentry-bootstrap-bases
{%- for user in bootstrap.users | sort %}
      - sentry_user: sentry-bootstrap-user-{{ user }}
{%- endfor %}
{%- for base in index.get("bases", []) if base in indexes %}
      - sentry_index: sentry-bootstrap-index-{{ base }}
{%- endfor %}
{%- endfor %}
{%- endif %}
