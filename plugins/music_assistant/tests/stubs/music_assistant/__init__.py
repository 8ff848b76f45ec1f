"""A small stand-in for the Music Assistant server package, for the provider's tests.

The real server is not installable as a library (it is an application with a long list of system
dependencies), so the tests run the provider against these base classes instead. They keep the
server's module paths, class names and method signatures (models/provider.py and models/plugin.py
of music-assistant/server), so the provider module imports exactly what it imports inside MA, and
a renamed or re-typed hook in MA is a one-line change here. Behaviour is limited to what a provider
relies on: config and logger set-up, feature checks and the config write-back.
"""
