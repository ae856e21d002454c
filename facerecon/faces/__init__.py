"""Face material: photos and built-ins, labelled collections, embedding files, nearest
strangers, image grids."""
