"""Service VMs: building, describing and checking the images cloudlets run and migrate."""
