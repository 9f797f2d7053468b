from seamless_relay.cli import main

main()
