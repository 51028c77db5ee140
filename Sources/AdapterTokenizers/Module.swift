// AdapterTokenizers: see DESIGN.md section 1.
