"""One module per group of `vidsift` commands. Each module lists its ``Command``s: the flags it
takes, their numeric ranges and the function that runs it. Modules import only the standard library
and ``app.commands.common`` at the top: building the parser (``vidsift --help``) loads neither torch
nor LanceDB; each command imports what it needs when it runs."""
