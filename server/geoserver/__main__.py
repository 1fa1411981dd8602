from geoserver.cli import main

main()
