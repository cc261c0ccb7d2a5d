from flamecast.plugins import hookimpl


@hookimpl
def flamecast_register_driverz(register):  # misspelled hook: check_pending must catch it
    pass
