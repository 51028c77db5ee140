// AdapterGeneration: see DESIGN.md section 1.
