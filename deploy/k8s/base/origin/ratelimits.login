{"requests_per_second": 20, "burst": 5}
