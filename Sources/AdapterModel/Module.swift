// AdapterModel: see DESIGN.md section 1.
