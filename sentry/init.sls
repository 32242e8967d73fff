{#- Deploy sentry: each concern is a sub-state, applied in this order. #}
{%- set tplroot = tpldir.split("/")[0] %}

include:
  - {{ tplroot }}.package
