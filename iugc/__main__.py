from iugc.cli import main

if __name__ == "__main__":  # not when a spawned process (the evaluation process of `iugc serve`) imports it
    main()
