# Every environment: the package from the company's apt repository, the
# public PyPI mirrored through the company's proxy.
sentry:
  package:
    source: apt_repo
    version: 6.20.3-1
    apt_repo:
      line: deb [signed-by=/usr/share/keyrings/sentry.gpg] https://apt.example.org/sentry bookworm main
      key_url: https://apt.example.org/sentry/key.gpg
  mirror:
    url: https://pypi.org/simple/
    https_proxy: http://proxy.example.org:3128
    no_proxy: .example.org
  theme:
    enabled: true
