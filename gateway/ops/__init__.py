"""Operations: Prometheus metrics and the in-process recent stats the admin API reads."""
