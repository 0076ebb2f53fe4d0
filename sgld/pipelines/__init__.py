"""Pipeline families' stage lists; which family a folder is, and what it can do, is in sgld.families."""
