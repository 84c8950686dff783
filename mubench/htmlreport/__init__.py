"""The HTML report (``mubench report --html``) and the per-run contact sheet.

``runs`` loads the runs and their per-image records, ``differ`` pairs two runs and orders prompts by the paired
difference, ``gallery`` lays out the side-by-side rows, ``table`` the results table, ``images`` copies the
pictures, ``page`` renders the folder with jinja2, ``contact`` draws ``contact.png``.
"""
