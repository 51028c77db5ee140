// AdapterFormats: see DESIGN.md section 1.
