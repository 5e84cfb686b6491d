"""Built-in kdiff components, installed under the import name ``kdiff_plugins``.

One component per module; each module holds ``@hookimpl`` functions from
:mod:`kdiff_cli.hookspecs`. Every module here is registered automatically.
"""
