"""Pure domain: wire models, validation, trigger maths and errors. Imports nothing of ours and never reads the clock."""
