"""The admin REST API under /api: statistics, remote AEs and the jobs that send studies to them."""
