"""Operations tools: launchers and tooling around the services (the real stack's infra)."""
