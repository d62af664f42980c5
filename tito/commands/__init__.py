"""Sub-commands of `tito`, one module per area. Each defines `register(subparsers)` and sets
`handler` on its parsers with `set_defaults(handler=...)`."""
