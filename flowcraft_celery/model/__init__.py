"""The workflow model: blueprints as data, built in Python, checked before a run, and found on disk.

Layer: above `expressions` only. `blueprint` (the reference JSON, read and written exactly),
`builder` (the fluent `Flow`), `graph` (the static shape: edges, joins, cycles, start nodes),
`validation` (every SPEC §7 problem at once), `durations` and `catalog` (finding blueprints in
files, folders and `module:attr`). No run state and no I/O beyond reading blueprint files.
"""
