from marginal.cli import main

main()
